/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.io;

import java.nio.file.Path;
import java.util.Arrays;

/**
 * One tensor's entry in a safetensors header: validated name, dtype, shape and the byte range of
 * its data, relative to the start of the data section.
 *
 * @param file the file the tensor lives in
 * @param name the tensor name
 * @param dtype the element type
 * @param shape the shape (empty for a scalar)
 * @param begin first byte of the data, relative to the data section
 * @param end one past the last byte
 */
public record TensorInfo(Path file, String name, DType dtype, long[] shape, long begin, long end) {

    /**
     * Returns the number of elements.
     *
     * @return the product of the shape
     */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    /**
     * Returns the number of data bytes.
     *
     * @return {@code end - begin}
     */
    public long byteSize() {
        return end - begin;
    }

    /**
     * Returns the shape as text, {@code [a, b]}.
     *
     * @return the shape
     */
    public String shapeString() {
        return Arrays.toString(shape);
    }

    @Override
    public String toString() {
        return name + " " + dtype + " " + shapeString() + " in " + file.getFileName();
    }
}

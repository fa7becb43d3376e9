package dev.djlmoe.testing;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

/**
 * Finds, in compiled classes, the calls that make an array from one Java number: DJL's {@code
 * NDArray} operations taking a {@code Number} ({@code mul(Number)}, {@code add(Number)}, {@code
 * gt(Number)}, ...) and {@code NDManager.create} of one primitive. DJL 0.36 makes that scalar from
 * host memory and copies it to the array's device, and on a GPU the engine's copy from the host
 * waits for every queued kernel first: one stall of the training step per call. Training code uses
 * {@code Autograd.scalar}, a fill on the device, instead.
 *
 * <p>It reads each class file's constant pool (JVM specification, section 4.4): every method a
 * class calls is one {@code Methodref} or {@code InterfaceMethodref} entry there.
 */
public final class HostScalarScan {

    private static final String NDARRAY = "ai/djl/ndarray/NDArray";
    private static final String NDMANAGER = "ai/djl/ndarray/NDManager";

    private HostScalarScan() {}

    /**
     * Lists the host-scalar calls of every class file below {@code root}.
     *
     * @param root a folder of class files (a package's folder under {@code target/classes})
     * @return one entry per call site kind: {@code "pkg/Class -> NDArray.mul(Ljava/lang/Number;)"}
     * @throws IOException when a class file cannot be read
     */
    public static List<String> hostScalarCalls(Path root) throws IOException {
        List<String> found = new ArrayList<>();
        List<Path> files;
        try (Stream<Path> walk = Files.walk(root)) {
            files = walk.filter(f -> f.toString().endsWith(".class")).sorted().toList();
        }
        for (Path f : files) {
            try (InputStream in = Files.newInputStream(f)) {
                for (String call : hostScalarCalls(in)) {
                    found.add(root.relativize(f).toString().replace(".class", "") + " -> " + call);
                }
            }
        }
        return found;
    }

    /**
     * Lists the host-scalar methods one class file refers to.
     *
     * @param classFile the class file's bytes
     * @return {@code "NDArray.mul(Ljava/lang/Number;)"}-style names
     * @throws IOException when the stream is not a class file
     */
    public static List<String> hostScalarCalls(InputStream classFile) throws IOException {
        DataInputStream in = new DataInputStream(classFile);
        if (in.readInt() != 0xCAFEBABE) {
            throw new IOException("not a class file (magic number)");
        }
        in.readUnsignedShort(); // minor version
        in.readUnsignedShort(); // major version
        int count = in.readUnsignedShort();
        String[] utf8 = new String[count];
        int[] classNameIndex = new int[count];
        int[][] methodRefs = new int[count][]; // {class index, name-and-type index}
        int[][] nameAndTypes = new int[count][]; // {name index, descriptor index}
        for (int i = 1; i < count; i++) {
            int tag = in.readUnsignedByte();
            switch (tag) {
                case 1 -> utf8[i] = in.readUTF();
                case 7, 8, 16, 19, 20 -> classNameIndex[i] = in.readUnsignedShort();
                case 3, 4 -> in.readInt();
                case 5, 6 -> {
                    in.readLong();
                    i++; // a long or double takes two entries
                }
                case 9 -> in.readInt(); // field reference
                case 10, 11 ->
                        methodRefs[i] = new int[] {in.readUnsignedShort(), in.readUnsignedShort()};
                case 12 ->
                        nameAndTypes[i] =
                                new int[] {in.readUnsignedShort(), in.readUnsignedShort()};
                case 15 -> {
                    in.readUnsignedByte();
                    in.readUnsignedShort();
                }
                case 17, 18 -> in.readInt();
                default -> throw new IOException("unknown constant pool tag " + tag + " at " + i);
            }
        }
        List<String> calls = new ArrayList<>();
        for (int[] ref : methodRefs) {
            if (ref == null) {
                continue;
            }
            String owner = utf8[classNameIndex[ref[0]]];
            String name = utf8[nameAndTypes[ref[1]][0]];
            String descriptor = utf8[nameAndTypes[ref[1]][1]];
            String params = descriptor.substring(0, descriptor.indexOf(')') + 1);
            boolean numberOperand = NDARRAY.equals(owner) && params.contains("Ljava/lang/Number;");
            boolean onePrimitive =
                    NDMANAGER.equals(owner)
                            && "create".equals(name)
                            && params.matches("\\([FDIJZB]\\)");
            if (numberOperand || onePrimitive) {
                calls.add(owner.substring(owner.lastIndexOf('/') + 1) + "." + name + params);
            }
        }
        return calls;
    }
}

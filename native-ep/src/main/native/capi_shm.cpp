// C ABI: the rendezvous store, the cpu-shm communicator and the collectives.
#include <cstring>
#include <memory>
#include <string>

#include "api_guard.h"
#include "capi_objects.h"
#include "collectives.h"
#include "nativeep/c_api.h"
#include "nativeep/export.h"
#include "shm_transport.h"
#include "store_client.h"
#include "store_server.h"

struct nep_store_server {
  std::unique_ptr<nep::StoreServer> impl;
};

struct nep_store {
  std::unique_ptr<nep::StoreClient> impl;
};

namespace {

std::string required_string(const char* s, const char* name) {
  if (s == nullptr) nep::fail_invalid(name, " is null");
  return std::string(s);
}

nep::StoreClient& client_of(nep_store* store) {
  if (store == nullptr || !store->impl) nep::fail_invalid("store is null");
  return *store->impl;
}

nep::Transport& transport_of(nep_comm* comm) {
  if (comm == nullptr || !comm->transport) nep::fail_invalid("comm is null");
  return *comm->transport;
}

// Copies a value into the caller's buffer following nep_store_get's contract.
void copy_value(const std::string& v, char* value, int64_t cap, int64_t* value_len,
                const char* key) {
  *value_len = static_cast<int64_t>(v.size());
  if (static_cast<int64_t>(v.size()) > cap) {
    nep::fail(NEP_ERR_CAPACITY, "value of store key '", key, "' has ", v.size(),
              " bytes but the buffer holds ", cap);
  }
  if (!v.empty()) {
    if (value == nullptr) nep::fail_invalid("value is null");
    std::memcpy(value, v.data(), v.size());
  }
}

}  // namespace

NEP_EXPORT int32_t nep_store_server_create(const char* host, int32_t port, const char* job_token,
                                           nep_store_server** out, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    auto s = std::make_unique<nep_store_server>();
    s->impl = std::make_unique<nep::StoreServer>(required_string(host, "host"), port,
                                                 required_string(job_token, "job_token"));
    *out = s.release();
  });
}

NEP_EXPORT int32_t nep_store_server_port(const nep_store_server* server) {
  return server != nullptr && server->impl ? server->impl->port() : -1;
}

NEP_EXPORT void nep_store_server_destroy(nep_store_server* server) { delete server; }

NEP_EXPORT int32_t nep_store_connect(const char* host, int32_t port, const char* job_token,
                                     int64_t timeout_ms, nep_store** out, char* err,
                                     int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    auto s = std::make_unique<nep_store>();
    s->impl = std::make_unique<nep::StoreClient>(required_string(host, "host"), port,
                                                 required_string(job_token, "job_token"),
                                                 timeout_ms, "store client");
    *out = s.release();
  });
}

NEP_EXPORT int32_t nep_store_set(nep_store* store, const char* key, const char* value,
                                 int64_t value_len, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::StoreClient& c = client_of(store);
    const std::string k = required_string(key, "key");
    if (value_len < 0) nep::fail_invalid("value_len = ", value_len, " must be >= 0");
    if (value_len > 0 && value == nullptr) nep::fail_invalid("value is null");
    c.set(k, std::string(value != nullptr ? value : "", static_cast<size_t>(value_len)));
  });
}

NEP_EXPORT int32_t nep_store_get(nep_store* store, const char* key, char* value, int64_t cap,
                                 int64_t* value_len, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::StoreClient& c = client_of(store);
    const std::string k = required_string(key, "key");
    if (value_len == nullptr) nep::fail_invalid("value_len is null");
    *value_len = -1;
    const auto v = c.get(k);
    if (v) copy_value(*v, value, cap, value_len, k.c_str());
  });
}

NEP_EXPORT int32_t nep_store_wait(nep_store* store, const char* key, int64_t timeout_ms,
                                  char* value, int64_t cap, int64_t* value_len, char* err,
                                  int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::StoreClient& c = client_of(store);
    const std::string k = required_string(key, "key");
    if (value_len == nullptr) nep::fail_invalid("value_len is null");
    *value_len = -1;
    copy_value(c.wait(k, timeout_ms), value, cap, value_len, k.c_str());
  });
}

NEP_EXPORT int32_t nep_store_add(nep_store* store, const char* key, int64_t delta, int64_t* result,
                                 char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::StoreClient& c = client_of(store);
    const std::string k = required_string(key, "key");
    if (result == nullptr) nep::fail_invalid("result is null");
    *result = c.add(k, delta);
  });
}

NEP_EXPORT void nep_store_close(nep_store* store) { delete store; }

NEP_EXPORT int32_t nep_comm_create_shm(int32_t rank, int32_t world_size, int32_t local_rank,
                                       int32_t local_world_size, const char* store_host,
                                       int32_t store_port, const char* job_token,
                                       int64_t timeout_ms, nep_comm** out, char* err,
                                       int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    if (out == nullptr) nep::fail_invalid("out is null");
    *out = nullptr;
    if (world_size < 1) nep::fail_invalid("world_size = ", world_size, " must be >= 1");
    if (rank < 0 || rank >= world_size)
      nep::fail_invalid("rank = ", rank, " is outside [0, ", world_size, ")");
    if (local_world_size < 1 || local_world_size > world_size) {
      nep::fail_invalid("local_world_size = ", local_world_size, " is outside [1, ", world_size,
                        "]");
    }
    if (local_world_size != world_size) {
      nep::fail(NEP_ERR_UNSUPPORTED,
                "cpu-shm connects the ranks of one host, but world_size = ", world_size,
                " and local_world_size = ", local_world_size,
                ": ranks on other hosts need a cross-host transport, which is missing for CPU"
                " tensors (nccl, the cross-host transport, carries GPU tensors only); run all ranks"
                " on one host");
    }
    if (local_rank != rank) {
      nep::fail_invalid("local_rank = ", local_rank, " must equal rank = ", rank,
                        " when every rank is on this host");
    }
    if (timeout_ms <= 0) nep::fail_invalid("timeout_ms = ", timeout_ms, " must be > 0");
    nep::StoreClient store(required_string(store_host, "store_host"), store_port,
                           required_string(job_token, "job_token"), timeout_ms,
                           "rank " + std::to_string(rank));
    nep::ShmConfig config;
    config.timeout_ms = timeout_ms;
    auto comm = std::make_unique<nep_comm>();
    comm->transport = std::make_unique<nep::ShmTransport>(store, rank, world_size, config);
    *out = comm.release();
  });
}

NEP_EXPORT int32_t nep_all_reduce_sum_f32(nep_comm* comm, int64_t data, int64_t count, char* err,
                                          int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::all_reduce_sum(transport_of(comm), reinterpret_cast<float*>(data), count);
  });
}

NEP_EXPORT int32_t nep_all_reduce_sum_f64(nep_comm* comm, int64_t data, int64_t count, char* err,
                                          int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::all_reduce_sum(transport_of(comm), reinterpret_cast<double*>(data), count);
  });
}

NEP_EXPORT int32_t nep_all_gather(nep_comm* comm, int64_t in, int64_t bytes, int64_t out, char* err,
                                  int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    nep::all_gather(transport_of(comm), reinterpret_cast<const void*>(in), bytes,
                    reinterpret_cast<void*>(out));
  });
}

NEP_EXPORT int32_t nep_barrier(nep_comm* comm, char* err, int64_t err_cap) {
  return nep::guarded(err, err_cap, [&] {
    const uint8_t token = 1;
    nep::Transport& t = transport_of(comm);
    std::string all(static_cast<size_t>(t.world_size()), '\0');
    nep::all_gather(t, &token, 1, all.data());
  });
}

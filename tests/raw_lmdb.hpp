#pragma once

/// For store tests: writing into an LMDB environment with raw LMDB calls, the way another
/// program (or a damaged disk) could, bypassing the store layer.

#include <string>
#include <string_view>

#include <catch2/catch.hpp>
#include <lmdb.h>

namespace weir::test {

/// Runs fn(txn, dbi) in one write txn on table `table` of the environment in `env_dir`.
template <class F>
void raw_write(const std::string& env_dir, const char* table, F&& fn) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 16) == 0);
  REQUIRE(mdb_env_open(env, env_dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, table, MDB_CREATE, &dbi) == 0);
  fn(txn, dbi);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

/// Writes `value` under `key` into table `table` of the environment in `env_dir`.
inline void raw_put(const std::string& env_dir, const char* table, std::string_view key,
                    std::string_view value) {
  raw_write(env_dir, table, [&](MDB_txn* txn, MDB_dbi dbi) {
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
  });
}

/// Empties table `table` of the environment in `env_dir`, as a damaged page could.
inline void raw_clear(const std::string& env_dir, const char* table) {
  raw_write(env_dir, table, [](MDB_txn* txn, MDB_dbi dbi) { REQUIRE(mdb_drop(txn, dbi, 0) == 0); });
}

} // namespace weir::test

#pragma once

/// For store tests: writing into an LMDB environment with raw LMDB calls, the way another
/// program (or a damaged disk) could, bypassing the store layer.

#include <string>
#include <string_view>

#include <catch2/catch.hpp>
#include <lmdb.h>

namespace weir::test {

/// Writes `value` under `key` into table `table` of the environment in `env_dir`.
inline void raw_put(const std::string& env_dir, const char* table, std::string_view key,
                    std::string_view value) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 16) == 0);
  REQUIRE(mdb_env_open(env, env_dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, table, MDB_CREATE, &dbi) == 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{value.size(), const_cast<char*>(value.data())};
  REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

/// Empties table `table` of the environment in `env_dir`, as a damaged page could.
inline void raw_clear(const std::string& env_dir, const char* table) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 16) == 0);
  REQUIRE(mdb_env_open(env, env_dir.c_str(), 0, 0644) == 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi;
  REQUIRE(mdb_dbi_open(txn, table, 0, &dbi) == 0);
  REQUIRE(mdb_drop(txn, dbi, 0) == 0);
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

} // namespace weir::test

-- Schema of the embedded SQLite store: upstream's tables (sqls/dtmsvr.storage.mysql.sql) with
-- the same column names, so tools and exports that know upstream's layout read this file too.
-- Times are TEXT 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC: lexical order is time order, which the
-- (status, next_cron_time) index and the create_time filters rely on.
-- Every statement is IF NOT EXISTS: opening a store never drops data.

CREATE TABLE IF NOT EXISTS trans_global (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  gid TEXT NOT NULL,
  trans_type TEXT NOT NULL,
  status TEXT NOT NULL,
  query_prepared TEXT NOT NULL DEFAULT '',
  protocol TEXT NOT NULL DEFAULT '',
  create_time TEXT,
  update_time TEXT,
  finish_time TEXT,
  rollback_time TEXT,
  options TEXT NOT NULL DEFAULT '',
  custom_data TEXT NOT NULL DEFAULT '',
  next_cron_interval INTEGER NOT NULL DEFAULT 0,
  next_cron_time TEXT,
  owner TEXT NOT NULL DEFAULT '',
  ext_data TEXT NOT NULL DEFAULT '',
  result TEXT NOT NULL DEFAULT '',
  rollback_reason TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS trans_global_gid ON trans_global (gid);
CREATE INDEX IF NOT EXISTS trans_global_owner ON trans_global (owner);
-- The cron scan (lock_due, reset_cron_time) reads unfinished statuses by due time.
CREATE INDEX IF NOT EXISTS trans_global_status_next_cron_time
  ON trans_global (status, next_cron_time);

CREATE TABLE IF NOT EXISTS trans_branch_op (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  gid TEXT NOT NULL,
  url TEXT NOT NULL DEFAULT '',
  -- Upstream's deprecated request body, kept only so the layout matches; never written.
  data TEXT,
  bin_data BLOB,
  branch_id TEXT NOT NULL,
  op TEXT NOT NULL,
  status TEXT NOT NULL,
  finish_time TEXT,
  rollback_time TEXT,
  create_time TEXT,
  update_time TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS trans_branch_op_gid_uniq
  ON trans_branch_op (gid, branch_id, op);

CREATE TABLE IF NOT EXISTS kv (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  cat TEXT NOT NULL,
  k TEXT NOT NULL,
  v TEXT,
  version INTEGER NOT NULL DEFAULT 1,
  create_time TEXT,
  update_time TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS kv_uniq_k ON kv (cat, k);

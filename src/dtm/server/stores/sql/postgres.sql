-- Schema of the PostgreSQL store: upstream DTM's sqls/dtmsvr.storage.postgres.sql without its
-- DROP statements, so this server and upstream's read and write the same tables (a database
-- upstream used is taken over as it is). Names are unqualified: they land in the schema the
-- connection's search_path names (Store.Schema, created beforehand when not public).
-- Every statement is IF NOT EXISTS: a migration never drops or changes data.
-- Times are timestamp(0): whole seconds. The store writes them truncated to the second from
-- the database's clock, and rounds lease ends up (see postgres.py).

CREATE SEQUENCE IF NOT EXISTS trans_global_seq;
CREATE TABLE IF NOT EXISTS trans_global (
  id bigint NOT NULL DEFAULT NEXTVAL ('trans_global_seq'),
  gid varchar(128) NOT NULL,
  trans_type varchar(45) not null,
  status varchar(45) NOT NULL,
  query_prepared varchar(1024) NOT NULL,
  protocol varchar(45) not null,
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  finish_time timestamp(0) with time zone DEFAULT NULL,
  rollback_time timestamp(0) with time zone DEFAULT NULL,
  options varchar(1024) DEFAULT '',
  custom_data varchar(1024) DEFAULT '',
  next_cron_interval int default null,
  next_cron_time timestamp(0) with time zone default null,
  owner varchar(128) not null default '',
  ext_data text,
  result varchar(1024) DEFAULT '',
  rollback_reason varchar(1024) DEFAULT '',
  PRIMARY KEY (id),
  CONSTRAINT gid UNIQUE (gid)
);
create index if not EXISTS owner on trans_global(owner);
-- The cron scan (lock_due, reset_cron_time) reads unfinished statuses by due time.
create index if not EXISTS status_next_cron_time on trans_global (status, next_cron_time);

CREATE SEQUENCE if not EXISTS trans_branch_op_seq;
CREATE TABLE IF NOT EXISTS trans_branch_op (
  id bigint NOT NULL DEFAULT NEXTVAL ('trans_branch_op_seq'),
  gid varchar(128) NOT NULL,
  url varchar(1024) NOT NULL,
  -- Upstream's deprecated request body, kept only so the layout matches; never written.
  data TEXT,
  bin_data bytea,
  branch_id VARCHAR(128) NOT NULL,
  op varchar(45) NOT NULL,
  status varchar(45) NOT NULL,
  finish_time timestamp(0) with time zone DEFAULT NULL,
  rollback_time timestamp(0) with time zone DEFAULT NULL,
  create_time timestamp(0) with time zone DEFAULT NULL,
  update_time timestamp(0) with time zone DEFAULT NULL,
  PRIMARY KEY (id),
  -- Also the index behind load's and purge's lookups by gid (its first column).
  CONSTRAINT gid_branch_uniq UNIQUE (gid, branch_id, op)
);

CREATE SEQUENCE if not EXISTS kv_seq;
CREATE TABLE IF NOT EXISTS kv (
    id bigint NOT NULL DEFAULT NEXTVAL ('kv_seq'),
    cat varchar(45) NOT NULL,
    k varchar(128) NOT NULL,
    v TEXT,
    version bigint default 1,
    create_time timestamp(0) with time zone DEFAULT NULL,
    update_time timestamp(0) with time zone DEFAULT  NULL,
    PRIMARY KEY (id),
    CONSTRAINT uniq_k UNIQUE(cat, k)
);

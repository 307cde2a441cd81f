-- Barrier table for SQLite, which has no schemas: the default name is plain `barrier`.
-- {table} is replaced by the (validated) table name; every statement is idempotent.
create table if not exists {table} (
  id integer primary key,
  trans_type text default '',
  gid text default '',
  branch_id text default '',
  op text default '',
  barrier_id text default '',
  reason text default '',
  create_time text default current_timestamp,
  update_time text default current_timestamp,
  unique (gid, branch_id, op, barrier_id)
)

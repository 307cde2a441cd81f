-- Barrier table for MySQL and MariaDB: the columns and unique key of upstream's
-- sqls/dtmcli.barrier.mysql.sql, so Go and Python branches can share one table.
-- {table} is replaced by the (validated) table name; every statement is idempotent.
create table if not exists {table} (
  id bigint primary key auto_increment,
  trans_type varchar(45) default '',
  gid varchar(128) default '',
  branch_id varchar(128) default '',
  op varchar(45) default '',
  barrier_id varchar(45) default '',
  reason varchar(45) default '' comment 'the branch op that inserted this row',
  create_time datetime default now(),
  update_time datetime default now(),
  key (create_time),
  key (update_time),
  unique key uniq_barrier (gid, branch_id, op, barrier_id)
) engine = InnoDB default charset = utf8mb4

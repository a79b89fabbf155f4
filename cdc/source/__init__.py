"""Everything that talks to MySQL/MariaDB: the binlog stream, row reads, server checks."""

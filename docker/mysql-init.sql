-- Demo database for docker/compose.yaml; runs once, when the MySQL data volume is created.
-- Also valid on MariaDB 10.5+ (scripts/container-smoke.sh runs it there).
-- Demo passwords: change both here and in compose.yaml before exposing anything.

-- The connector reads the binlog like a replica and reads table metadata and snapshot rows.
CREATE USER IF NOT EXISTS 'cdc'@'%' IDENTIFIED BY 'cdc-demo-password';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'cdc'@'%';

-- The load generator writes as an ordinary application user.
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app-demo-password';

CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4;
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.* TO 'app'@'%';

CREATE TABLE IF NOT EXISTS shop.customers (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email VARCHAR(255) NOT NULL,
    name VARCHAR(200) NOT NULL,
    tier ENUM('free', 'pro', 'enterprise') NOT NULL DEFAULT 'free',
    balance DECIMAL(12, 2) NOT NULL DEFAULT 0,
    attributes JSON NULL,
    internal_note VARCHAR(255) NULL,
    is_deleted TINYINT(1) NOT NULL DEFAULT 0,
    updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    UNIQUE KEY uq_email (email)
);

INSERT INTO shop.customers (email, name, tier, balance, attributes) VALUES
    ('ada@example.com', 'Ada Lovelace', 'enterprise', 1815.12, '{"country": "GB"}'),
    ('grace@example.com', 'Grace Hopper', 'pro', 1906.09, '{"country": "US"}'),
    ('edsger@example.com', 'Edsger Dijkstra', 'free', 1930.05, '{"country": "NL"}');

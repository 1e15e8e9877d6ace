--liquibase formatted sql

--changeset lin:stats-table
CREATE TABLE catalog_stats (refreshed int NOT NULL DEFAULT 0, books int);
INSERT INTO catalog_stats VALUES (0, NULL);

--changeset lin:refresh-stats runAlways:true
UPDATE catalog_stats SET refreshed = refreshed + 1, books = (SELECT count(*) FROM book);

-- Migration 1: books get an ISBN, unique when known.
ALTER TABLE books ADD COLUMN isbn text;
CREATE UNIQUE INDEX books_isbn_key ON books (isbn) WHERE isbn IS NOT NULL;

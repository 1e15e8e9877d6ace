CREATE TABLE books (
    id        serial PRIMARY KEY,
    author_id int  NOT NULL REFERENCES authors (id),
    title     text NOT NULL,
    published int  CHECK (published > 0)
);
CREATE INDEX books_author_idx ON books (author_id);

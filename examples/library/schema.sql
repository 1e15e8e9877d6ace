-- A small lending library: the schema the migrations start from.
CREATE TABLE authors (
    author_id   integer PRIMARY KEY,
    name        text NOT NULL,
    born        integer
);

CREATE TABLE books (
    book_id     integer PRIMARY KEY,
    author_id   integer NOT NULL REFERENCES authors,
    title       text NOT NULL,
    published   integer NOT NULL
);

CREATE TABLE members (
    member_id   integer PRIMARY KEY,
    name        text NOT NULL,
    joined      date NOT NULL
);

CREATE TABLE loans (
    loan_id     integer PRIMARY KEY,
    book_id     integer NOT NULL REFERENCES books,
    member_id   integer NOT NULL REFERENCES members,
    loaned_on   date NOT NULL
);
CREATE INDEX loans_book_idx ON loans (book_id);
CREATE INDEX loans_member_idx ON loans (member_id);

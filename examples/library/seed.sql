-- Generated seed data: deterministic (no random()), so every build gives the same rows.
-- 300 authors, 6,000 books, 2,000 members, 40,000 loans.
INSERT INTO authors (author_id, name, born)
SELECT i, 'Author ' || lpad(i::text, 3, '0'), 1900 + (i::bigint * 37) % 100
  FROM generate_series(1, 300) AS i;

INSERT INTO books (book_id, author_id, title, published, isbn)
SELECT i, 1 + (i::bigint * 7919) % 300, 'Book ' || i || ' ' || substr(md5(i::text), 1, 8),
       1950 + (i::bigint * 31) % 75, CASE WHEN i % 10 <> 0 THEN '978' || lpad(i::text, 10, '0') END
  FROM generate_series(1, 6000) AS i;

INSERT INTO members (member_id, name, joined)
SELECT i, 'Member ' || i, date '2015-01-01' + ((i::bigint * 13) % 3650)::int
  FROM generate_series(1, 2000) AS i;

INSERT INTO loans (loan_id, book_id, member_id, loaned_on, returned_on)
SELECT i, 1 + (i::bigint * 104729) % 6000, 1 + (i::bigint * 7907) % 2000, date '2024-01-01' + ((i::bigint * 17) % 700)::int,
       CASE WHEN i % 9 <> 0 THEN date '2024-01-01' + ((i::bigint * 17) % 700)::int + (i % 28) END
  FROM generate_series(1, 40000) AS i;

ANALYZE;

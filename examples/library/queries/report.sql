-- The front desk's morning report.
\pset footer off
SELECT count(*) AS books, (SELECT count(*) FROM members) AS members,
       (SELECT count(*) FROM open_loans) AS open_loans
  FROM books;
SELECT name, loans FROM popular_authors ORDER BY loans DESC, name LIMIT 5;

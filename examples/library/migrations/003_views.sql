-- Migration 3: what the front desk asks every day.
CREATE VIEW open_loans AS
SELECT l.loan_id, b.title, m.name AS member, l.loaned_on
  FROM loans l JOIN books b USING (book_id) JOIN members m USING (member_id)
 WHERE l.returned_on IS NULL;

CREATE VIEW popular_authors AS
SELECT a.name, count(*) AS loans
  FROM loans l JOIN books b USING (book_id) JOIN authors a USING (author_id)
 GROUP BY a.author_id, a.name;

INSERT INTO authors (name) VALUES ('Ursula K. Le Guin'), ('Stanisław Lem');
INSERT INTO books (author_id, title, published)
SELECT a.id, b.title, b.published
FROM (VALUES ('Ursula K. Le Guin', 'The Dispossessed', 1974),
             ('Ursula K. Le Guin', 'The Left Hand of Darkness', 1969),
             ('Stanisław Lem', 'Solaris', 1961)) AS b (author, title, published)
JOIN authors a ON a.name = b.author;

"""Read-only queries over the catalog."""

from __future__ import annotations

from sakila_app import film_by_title, films_in_category, search_films, stock_count, top_actors


def test_the_catalog_is_complete(db):
    counts = db.execute("SELECT (SELECT count(*) FROM film), (SELECT count(*) FROM actor), "
                        "(SELECT count(*) FROM inventory)").fetchone()
    assert counts == (1000, 200, 4581)


def test_film_by_title(db):
    film = film_by_title(db, "Academy Dinosaur")
    assert film is not None
    assert film["film_id"] == 1 and film["rating"] == "PG" and film["rental_duration"] == 6


def test_unknown_title(db):
    assert film_by_title(db, "No Such Film") is None


def test_full_text_search(db):
    assert "ACADEMY DINOSAUR" in search_films(db, "epic drama feminist", limit=50)


def test_category_listing(db):
    horror = films_in_category(db, "Horror")
    assert len(horror) == 56
    assert horror == sorted(horror)


def test_top_actor(db):
    assert top_actors(db, 1) == [("GINA DEGENERES", 42)]


def test_stock_of_a_film(db):
    assert stock_count(db, 1, 1) == 4

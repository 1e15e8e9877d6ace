"""Store-level reporting and catalog maintenance."""

from __future__ import annotations

from decimal import Decimal

from sakila_app import add_film, film_by_title, raise_category_prices, revenue_by_store, search_films


def test_revenue_by_store(db):
    assert revenue_by_store(db) == {"Lethbridge,Canada": Decimal("33689.74"),
                                    "Woodridge,Australia": Decimal("33726.77")}


def test_price_rise_for_a_category(db):
    assert raise_category_prices(db, "Horror", 10) == 56
    film = db.execute("SELECT f.rental_rate FROM film f JOIN film_category USING (film_id) "
                      "JOIN category c USING (category_id) WHERE c.name = 'Horror' ORDER BY f.film_id LIMIT 1"
                      ).fetchone()
    assert film[0] in (Decimal("1.09"), Decimal("3.29"), Decimal("5.49"))


def test_prices_are_as_shipped(db):
    assert db.execute("SELECT sum(rental_rate) FROM film").fetchone()[0] == Decimal("2980.00")


def test_a_new_film_is_searchable(db):
    add_film(db, "Testing With Elephants", "A gripping documentary about disposable databases")
    assert film_by_title(db, "Testing With Elephants") is not None
    assert "TESTING WITH ELEPHANTS" in search_films(db, "disposable databases")

"""Customer records."""

from __future__ import annotations

import pytest
from sakila_app import OpenRentals, create_customer, deactivate_customer


def test_create_customer(db):
    customer_id = create_customer(db, store_id=1, first_name="Ada", last_name="Lovelace", email="ada@example.org",
                                  address_id=5)
    row = db.execute("SELECT first_name, activebool FROM customer WHERE customer_id = %s", (customer_id,)).fetchone()
    assert row == ("ADA", True)
    assert db.execute("SELECT count(*) FROM customer").fetchone()[0] == 600


def test_customer_count_is_untouched_by_other_tests(db):
    assert db.execute("SELECT count(*) FROM customer").fetchone()[0] == 599


def test_deactivate_a_customer_without_open_rentals(db):
    customer_id = create_customer(db, store_id=2, first_name="Alan", last_name="Turing", email=None,
                                  address_id=6)
    deactivate_customer(db, customer_id)
    assert db.execute("SELECT activebool FROM customer WHERE customer_id = %s", (customer_id,)).fetchone() == (False,)


def test_cannot_deactivate_a_customer_with_films_at_home(db):
    holder = db.execute("SELECT customer_id FROM rental WHERE return_date IS NULL LIMIT 1").fetchone()[0]
    with pytest.raises(OpenRentals):
        deactivate_customer(db, holder)

"""Renting and returning films: every test changes the database (and gets a fresh one)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sakila_app import FilmNotInStock, customer_balance, overdue_rentals, rent_film, return_film, stock_count

NOW = datetime(2006, 3, 1, 12, 0)


def test_renting_takes_a_copy_off_the_shelf(db):
    before = stock_count(db, 1, 1)
    rent_film(db, film_id=1, store_id=1, customer_id=1, staff_id=1, when=NOW)
    assert stock_count(db, 1, 1) == before - 1


def test_renting_every_copy_then_one_more(db):
    for _ in range(stock_count(db, 1, 1)):
        rent_film(db, film_id=1, store_id=1, customer_id=2, staff_id=1, when=NOW)
    with pytest.raises(FilmNotInStock):
        rent_film(db, film_id=1, store_id=1, customer_id=2, staff_id=1, when=NOW)


def test_return_on_time_charges_the_rate(db):
    rental = rent_film(db, film_id=1, store_id=1, customer_id=3, staff_id=1, when=NOW)
    assert return_film(db, rental, when=NOW + timedelta(days=2)) == Decimal("0.99")


def test_late_return_charges_a_fee_per_day(db):
    rental = rent_film(db, film_id=1, store_id=1, customer_id=3, staff_id=1, when=NOW)
    # rental_duration of film 1 is 6 days: 4 days late
    assert return_film(db, rental, when=NOW + timedelta(days=10)) == Decimal("4.99")


def test_a_return_is_booked_once(db):
    rental = rent_film(db, film_id=2, store_id=2, customer_id=4, staff_id=2, when=NOW)
    return_film(db, rental, when=NOW + timedelta(days=1))
    with pytest.raises(LookupError):
        return_film(db, rental, when=NOW + timedelta(days=2))


def test_overdue_rentals(db):
    # the data set has 183 rentals never returned
    assert len(overdue_rentals(db, NOW)) == 183
    rental = rent_film(db, film_id=1, store_id=1, customer_id=5, staff_id=1, when=NOW)
    assert rental in overdue_rentals(db, NOW + timedelta(days=7))


def test_balance_grows_with_a_new_rental(db):
    before = customer_balance(db, 1, NOW)
    rent_film(db, film_id=1, store_id=1, customer_id=1, staff_id=1, when=NOW)
    assert customer_balance(db, 1, NOW + timedelta(seconds=1)) == before + Decimal("0.99")

"""Application logic over a psycopg 3 connection. Every function commits what it changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

LATE_FEE_PER_DAY = Decimal("1.00")


class FilmNotInStock(Exception):
    """No copy of the film is on the shelf of that store."""


class OpenRentals(Exception):
    """The customer still has films at home."""


def film_by_title(conn: psycopg.Connection[Any], title: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT film_id, title, rental_rate, rental_duration, length, rating::text FROM film WHERE title = %s",
        (title.upper(),),
    ).fetchone()
    if row is None:
        return None
    keys = ("film_id", "title", "rental_rate", "rental_duration", "length", "rating")
    return dict(zip(keys, row, strict=True))


def search_films(conn: psycopg.Connection[Any], words: str, limit: int = 10) -> list[str]:
    """Full-text search over title and description (Sakila's `fulltext` column)."""
    rows = conn.execute(
        "SELECT title FROM film WHERE fulltext @@ plainto_tsquery('english', %s) ORDER BY title LIMIT %s",
        (words, limit),
    ).fetchall()
    return [row[0] for row in rows]


def films_in_category(conn: psycopg.Connection[Any], category: str) -> list[str]:
    rows = conn.execute(
        "SELECT f.title FROM film f JOIN film_category fc USING (film_id) JOIN category c USING (category_id) "
        "WHERE c.name = %s ORDER BY f.title",
        (category,),
    ).fetchall()
    return [row[0] for row in rows]


def top_actors(conn: psycopg.Connection[Any], n: int = 3) -> list[tuple[str, int]]:
    rows = conn.execute(
        "SELECT a.first_name || ' ' || a.last_name, count(*) FROM actor a JOIN film_actor USING (actor_id) "
        "GROUP BY a.actor_id ORDER BY count(*) DESC, a.actor_id LIMIT %s",
        (n,),
    ).fetchall()
    return [(row[0], int(row[1])) for row in rows]


def stock_count(conn: psycopg.Connection[Any], film_id: int, store_id: int) -> int:
    """Copies of the film on the shelf of the store (Sakila's film_in_stock function)."""
    return len(conn.execute("SELECT * FROM film_in_stock(%s, %s)", (film_id, store_id)).fetchall())


def rent_film(conn: psycopg.Connection[Any], film_id: int, store_id: int, customer_id: int, staff_id: int,
              when: datetime | None = None) -> int:
    """Rent a copy that is in stock; returns the rental id."""
    with conn.transaction():
        row = conn.execute(
            "SELECT inventory_id FROM inventory WHERE film_id = %s AND store_id = %s "
            "AND inventory_in_stock(inventory_id) ORDER BY inventory_id LIMIT 1 FOR UPDATE",
            (film_id, store_id),
        ).fetchone()
        if row is None:
            raise FilmNotInStock(f"film {film_id} is not in stock at store {store_id}")
        rental = conn.execute(
            "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) VALUES (%s, %s, %s, %s) "
            "RETURNING rental_id",
            (when or datetime.now(), row[0], customer_id, staff_id),
        ).fetchone()
    assert rental is not None
    return int(rental[0])


def return_film(conn: psycopg.Connection[Any], rental_id: int, when: datetime | None = None) -> Decimal:
    """Book the return, charge rent plus late fees; returns the amount charged."""
    when = when or datetime.now()
    with conn.transaction():
        row = conn.execute(
            "SELECT r.rental_date, r.customer_id, r.staff_id, f.rental_rate, f.rental_duration "
            "FROM rental r JOIN inventory i USING (inventory_id) JOIN film f USING (film_id) "
            "WHERE r.rental_id = %s AND r.return_date IS NULL FOR UPDATE OF r",
            (rental_id,),
        ).fetchone()
        if row is None:
            raise LookupError(f"rental {rental_id} is not open")
        rented_at, customer_id, staff_id, rate, duration = row
        late_days = max(0, (when - rented_at - timedelta(days=duration)).days)
        amount = Decimal(rate) + LATE_FEE_PER_DAY * late_days
        conn.execute("UPDATE rental SET return_date = %s WHERE rental_id = %s", (when, rental_id))
        conn.execute(
            "INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES (%s, %s, %s, %s, %s)",
            (customer_id, staff_id, rental_id, amount, when),
        )
    return amount


def customer_balance(conn: psycopg.Connection[Any], customer_id: int, when: datetime) -> Decimal:
    """Rent of every film rented until `when`, less what the customer paid until then.

    (Sakila's own get_customer_balance() uses MySQL's IF() and fails on PostgreSQL.)
    """
    row = conn.execute(
        "SELECT (SELECT coalesce(sum(f.rental_rate), 0) FROM rental r JOIN inventory i USING (inventory_id) "
        "        JOIN film f USING (film_id) WHERE r.customer_id = %(c)s AND r.rental_date <= %(t)s) "
        "     - (SELECT coalesce(sum(amount), 0) FROM payment WHERE customer_id = %(c)s AND payment_date <= %(t)s)",
        {"c": customer_id, "t": when},
    ).fetchone()
    assert row is not None
    return Decimal(row[0])


def overdue_rentals(conn: psycopg.Connection[Any], as_of: datetime) -> list[int]:
    rows = conn.execute(
        "SELECT r.rental_id FROM rental r JOIN inventory i USING (inventory_id) JOIN film f USING (film_id) "
        "WHERE r.return_date IS NULL AND r.rental_date + f.rental_duration * interval '1 day' < %s "
        "ORDER BY r.rental_id",
        (as_of,),
    ).fetchall()
    return [row[0] for row in rows]


def create_customer(conn: psycopg.Connection[Any], store_id: int, first_name: str, last_name: str, email: str,
                    address_id: int) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO customer (store_id, first_name, last_name, email, address_id, active) "
            "VALUES (%s, %s, %s, %s, %s, 1) RETURNING customer_id",
            (store_id, first_name.upper(), last_name.upper(), email, address_id),
        ).fetchone()
    assert row is not None
    return int(row[0])


def deactivate_customer(conn: psycopg.Connection[Any], customer_id: int) -> None:
    with conn.transaction():
        open_rentals = conn.execute(
            "SELECT count(*) FROM rental WHERE customer_id = %s AND return_date IS NULL", (customer_id,)
        ).fetchone()
        if open_rentals and open_rentals[0]:
            raise OpenRentals(f"customer {customer_id} has {open_rentals[0]} film(s) at home")
        conn.execute("UPDATE customer SET activebool = false, active = 0 WHERE customer_id = %s", (customer_id,))


def revenue_by_store(conn: psycopg.Connection[Any]) -> dict[str, Decimal]:
    return {row[0]: Decimal(row[1]) for row in conn.execute("SELECT store, total_sales FROM sales_by_store")}


def raise_category_prices(conn: psycopg.Connection[Any], category: str, percent: int) -> int:
    """Raise the rental rate of every film of a category; returns how many films changed."""
    with conn.transaction():
        cursor = conn.execute(
            "UPDATE film SET rental_rate = round(rental_rate * (100 + %s) / 100.0, 2) "
            "WHERE film_id IN (SELECT film_id FROM film_category JOIN category USING (category_id) WHERE name = %s)",
            (percent, category),
        )
    return cursor.rowcount


def add_film(conn: psycopg.Connection[Any], title: str, description: str, language: str = "English",
             rental_rate: Decimal = Decimal("2.99")) -> int:
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO film (title, description, language_id, rental_rate) "
            "SELECT %s, %s, language_id, %s FROM language WHERE name = %s RETURNING film_id",
            (title.upper(), description, rental_rate, language),
        ).fetchone()
    if row is None:
        raise LookupError(f"no language {language!r}")
    return int(row[0])

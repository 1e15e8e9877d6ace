"""A tiny DVD-rental back office on the Sakila schema: the application the example tests."""

from sakila_app.store import (
    FilmNotInStock,
    OpenRentals,
    add_film,
    create_customer,
    customer_balance,
    deactivate_customer,
    film_by_title,
    films_in_category,
    overdue_rentals,
    raise_category_prices,
    rent_film,
    return_film,
    revenue_by_store,
    search_films,
    stock_count,
    top_actors,
)

__all__ = [
    "FilmNotInStock",
    "OpenRentals",
    "add_film",
    "create_customer",
    "customer_balance",
    "deactivate_customer",
    "film_by_title",
    "films_in_category",
    "overdue_rentals",
    "raise_category_prices",
    "rent_film",
    "return_film",
    "revenue_by_store",
    "search_films",
    "stock_count",
    "top_actors",
]

"""Third-party migration formats read without their tools (Liquibase changelogs), and the runner
program that drives the user's own Alembic (shared by the engine's step and the client's check)."""

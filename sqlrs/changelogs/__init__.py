"""Third-party migration formats read without their tools (Liquibase changelogs)."""

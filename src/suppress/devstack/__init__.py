"""The development stack: embedded PostgreSQL and Redis from wheels, and the `suppress dev` runner."""

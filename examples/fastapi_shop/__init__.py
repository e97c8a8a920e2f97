"""A FastAPI service that publishes on the bus: see README.md beside this file."""

"""Faust agents: decode -> call pipeline -> emit. No business rules here."""

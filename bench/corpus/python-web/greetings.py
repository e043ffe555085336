"""Greetings, kept apart from the web layer."""


def greeting(name: str) -> str:
    return f"Hello, {name}!"

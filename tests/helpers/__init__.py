"""Importable test helpers: real registry servers (``registries``) and tiny real images (``images``).

Test modules import them as ``from helpers.images import busybox_image`` (``tests/`` is on ``sys.path``,
put there by ``tests/conftest.py``).
"""

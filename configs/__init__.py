"""Shipped YAML configs (model files, ``cluster/`` profiles), installed as package data."""

from pathlib import Path

#: The folder holding the shipped YAML files, in a checkout or an installed wheel.
CONFIG_DIR = Path(__file__).resolve().parent

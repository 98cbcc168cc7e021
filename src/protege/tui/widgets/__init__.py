"""Widgets of the review console, one per module."""

"""Tests of protege.services (tiers, serving, the lifecycle around calls, background work, drift)."""

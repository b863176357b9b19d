"""Randomized fault testing of a fleet, and the checker that judges its history."""

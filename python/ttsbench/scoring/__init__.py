"""Scoring and decisions: objective metrics, human ratings, statistics, decision rules, verdict, report."""

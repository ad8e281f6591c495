"""The method itself: capture, forward record, backward sweep, rules and the Explanation.

Imports only torch and numpy, never an application module."""

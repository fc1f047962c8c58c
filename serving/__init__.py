"""The regulation service (HTTP API, policy, model-endpoint client). Built in a later issue."""

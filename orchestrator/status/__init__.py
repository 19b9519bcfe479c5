"""The fleet's status: its data model, the status API and page, metrics, and the chain's view."""

"""The data's way: plan, fetch, transform, write, advance; one module per step."""

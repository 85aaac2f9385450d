"""The HTTP layer: endpoints per resource and the error mapping."""

"""One module per resource; each is a thin shell over ``fleet``."""

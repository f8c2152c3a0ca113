"""TaskFlow decorators of the Gradient provider."""

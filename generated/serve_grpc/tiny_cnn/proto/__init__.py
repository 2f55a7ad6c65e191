"""Protocol buffers of the service and the stubs compiled from them."""

"""What is not inference: synthetic models, benchmarks, inspect/plan and doctor. Uses `engine`."""

# Thin wrappers: ./dev does the work (so `make` is optional).
.PHONY: run test bench

run:
	./dev run

test:
	./dev test

bench:
	./dev bench

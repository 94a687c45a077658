"""linelight hardware adapters: Modbus, GPIO, simulator and the stack-light driver."""


secmaster-20250314-000001security-masterÀÜš¸µ‰Œ RV
AAPL
Apple Inc.Information Technology"*Technology Hardware, Storage & Peripherals

secmaster-20250314-000003security-masterÀå”¹µ‰Œ R6
JNJJohnson & JohnsonHealth Care"Pharmaceuticals

corpact-NVDA-split-2024-06-10corporate-actions€ÌÒƒ¸Ê† š
NVDA
2024-06-10R

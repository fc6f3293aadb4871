
crm-HH-20417-objective-2025-09advisor-workstation€¸Œê· ¢
HH-20417
1000
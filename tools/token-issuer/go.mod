module retainer/tools/token-issuer

go 1.24

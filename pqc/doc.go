package pqc

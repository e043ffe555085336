#ifndef TABLE_H
#define TABLE_H

#include <stddef.h>

struct entry {
    char *word;
    size_t count;
};

struct table {
    struct entry *entries;
    size_t len, cap;
};

void table_add(struct table *t, const char *word);
void table_sort(struct table *t);
void table_free(struct table *t);

#endif

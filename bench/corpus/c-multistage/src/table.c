#include "table.h"

#include <stdlib.h>
#include <string.h>

void table_add(struct table *t, const char *word) {
    for (size_t i = 0; i < t->len; i++) {
        if (strcmp(t->entries[i].word, word) == 0) {
            t->entries[i].count++;
            return;
        }
    }
    if (t->len == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->entries = realloc(t->entries, t->cap * sizeof *t->entries);
        if (!t->entries)
            abort();
    }
    t->entries[t->len].word = strdup(word);
    t->entries[t->len].count = 1;
    t->len++;
}

static int by_count(const void *a, const void *b) {
    const struct entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

void table_sort(struct table *t) { qsort(t->entries, t->len, sizeof *t->entries, by_count); }

void table_free(struct table *t) {
    for (size_t i = 0; i < t->len; i++)
        free(t->entries[i].word);
    free(t->entries);
}

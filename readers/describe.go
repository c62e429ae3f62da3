package readers

import (
	"context"
	"fmt"
	"os"

	"github.com/apache/arrow/go/v17/parquet/file"
	"github.com/apache/arrow/go/v17/parquet/pqarrow"

	"github.com/staticref/staticref/readers/objstore"
)

// Description is what `staticref inspect` shows of a Parquet file.
type Description struct {
	Path      string         `json:"path"`
	Bytes     int64          `json:"bytes"`
	Rows      int64          `json:"rows"`
	CreatedBy string         `json:"created_by"`
	Columns   []ColumnInfo   `json:"columns"`
	RowGroups []RowGroupInfo `json:"row_groups"`
}

// ColumnInfo is one top-level column as Arrow reads it.
type ColumnInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Nullable bool   `json:"nullable"`
}

// RowGroupInfo is one row group of a file.
type RowGroupInfo struct {
	Index  int      `json:"index"`
	Rows   int64    `json:"rows"`
	Bytes  int64    `json:"bytes"`
	Codecs []string `json:"codecs"`
}

// Describe reads a Parquet file's footer: its Arrow schema and row groups. path is a
// local path, a file:// URL or an object URL; an object's footer is read with ranged
// reads, nothing else.
func Describe(path string) (d *Description, err error) {
	return DescribeContext(context.Background(), path)
}

// DescribeContext is Describe under ctx.
func DescribeContext(ctx context.Context, path string) (d *Description, err error) {
	defer func() {
		if r := recover(); r != nil {
			d, err = nil, fmt.Errorf("parquet %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	if objstore.IsURL(path) {
		r, err := objstore.Open(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("parquet %w", err)
		}
		defer r.Close()
		if _, err := checkFooter(r, r.Size()); err != nil {
			return nil, fmt.Errorf("parquet %s: %w", r.Name(), err)
		}
		pr, err := file.NewParquetReader(r)
		if err != nil {
			return nil, fmt.Errorf("parquet %s: %w: %w", r.Name(), ErrCorrupt, err)
		}
		return describe(r.Name(), r.Size(), pr)
	}
	if p, ok := objstore.FilePath(path); ok {
		path = p
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("parquet %s: %w: not a regular file", path, ErrCorrupt)
	}
	osf, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	_, err = checkFooter(osf, st.Size())
	osf.Close()
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	pr, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w: %w", path, ErrCorrupt, err)
	}
	defer pr.Close()
	return describe(path, st.Size(), pr)
}

func describe(path string, size int64, pr *file.Reader) (d *Description, err error) {
	md := pr.MetaData()
	d = &Description{Path: path, Bytes: size, Rows: md.NumRows, CreatedBy: md.GetCreatedBy()}
	schema, err := pqarrow.FromParquet(md.Schema, nil, md.KeyValueMetadata())
	if err != nil {
		return nil, fmt.Errorf("parquet %s: schema: %w", path, err)
	}
	for _, f := range schema.Fields() {
		d.Columns = append(d.Columns, ColumnInfo{Name: f.Name, Type: typeName(f.Type), Nullable: f.Nullable})
	}
	for i := range pr.NumRowGroups() {
		rg := md.RowGroup(i)
		info := RowGroupInfo{Index: i, Rows: rg.NumRows(), Bytes: rg.TotalByteSize()}
		seen := map[string]bool{}
		for c := range rg.NumColumns() {
			cc, err := rg.ColumnChunk(c)
			if err != nil {
				return nil, fmt.Errorf("parquet %s: row group %d column %d: %w", path, i, c, err)
			}
			if name := cc.Compression().String(); !seen[name] {
				seen[name] = true
				info.Codecs = append(info.Codecs, name)
			}
		}
		d.RowGroups = append(d.RowGroups, info)
	}
	return d, nil
}

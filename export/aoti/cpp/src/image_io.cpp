// Image files through the system's libpng and libjpeg-turbo (no vendored copies).
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include <jpeglib.h>
#include <png.h>

#include "zeroseg/image.h"

namespace zeroseg {
namespace {

struct File {
  std::FILE* fp = nullptr;
  File(const std::filesystem::path& path, const char* mode) : fp(std::fopen(path.c_str(), mode)) {}
  ~File() {
    if (fp) std::fclose(fp);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
};

// libpng reports errors through longjmp; the message is kept here and thrown after the jump.
struct PngErr {
  char message[256] = "unknown libpng error";
};

void png_error_fn(png_structp png, png_const_charp msg) {
  auto* err = static_cast<PngErr*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof(err->message), "%s", msg);
  png_longjmp(png, 1);
}

void png_warning_fn(png_structp, png_const_charp) {}

Image read_png(std::FILE* fp, const std::string& name) {
  PngErr err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error("out of memory reading " + name);
  }
  Image img;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(name + " is not a readable PNG (" + err.message + ")");
  }
  png_init_io(png, fp);
  png_read_info(png, info);
  // Pillow's convert("RGB"): palette and grey expanded, 16 bits -> high byte, alpha dropped
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  img.width = static_cast<int>(png_get_image_width(png, info));
  img.height = static_cast<int>(png_get_image_height(png, info));
  if (png_get_rowbytes(png, info) != static_cast<png_size_t>(img.width) * 3) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(name + ": unsupported PNG layout");
  }
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  rows.resize(img.height);
  for (int y = 0; y < img.height; ++y) rows[y] = img.rgb.data() + static_cast<size_t>(y) * img.width * 3;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "unknown libjpeg error";
};

void jpeg_error_fn(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

Image read_jpeg(std::FILE* fp, const std::string& name) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_fn;
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(name + " is not a readable JPEG (" + err.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, fp);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;  // defaults otherwise: islow DCT, fancy upsampling (as Pillow)
  jpeg_start_decompress(&cinfo);
  img.width = static_cast<int>(cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.rgb.resize(static_cast<size_t>(img.height) * img.width * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.rgb.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

void write_png_file(const std::filesystem::path& path, const std::int32_t* labels, int height, int width,
                    int num_labels) {
  File out(path, "wb");
  if (!out.fp) throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
  PngErr err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_error_fn, png_warning_fn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw Error("out of memory writing " + path.string());
  }
  const bool wide = num_labels > 255;  // 255 never means a class in a palette PNG
  std::vector<std::uint8_t> row(static_cast<size_t>(width) * (wide ? 2 : 1));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("cannot write " + path.string() + " (" + err.message + ")");
  }
  png_init_io(png, out.fp);
  if (wide) {
    png_set_IHDR(png, info, width, height, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  } else {
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_color palette[256];
    for (int i = 0; i < 256; ++i) {  // PASCAL VOC: label bits spread over the channels' high bits
      int r = 0, g = 0, b = 0;
      for (int shift = 0; shift < 8; ++shift) {
        r |= ((i >> (3 * shift)) & 1) << (7 - shift);
        g |= ((i >> (3 * shift + 1)) & 1) << (7 - shift);
        b |= ((i >> (3 * shift + 2)) & 1) << (7 - shift);
      }
      palette[i] = png_color{static_cast<png_byte>(r), static_cast<png_byte>(g), static_cast<png_byte>(b)};
    }
    png_set_PLTE(png, info, palette, 256);
  }
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) {
    const std::int32_t* src = labels + static_cast<size_t>(y) * width;
    for (int x = 0; x < width; ++x) {
      if (wide) {
        row[2 * x] = static_cast<std::uint8_t>(src[x] >> 8);
        row[2 * x + 1] = static_cast<std::uint8_t>(src[x] & 0xff);
      } else {
        row[x] = static_cast<std::uint8_t>(src[x]);
      }
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fflush(out.fp) != 0) throw Error("cannot write " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

Image read_image(const std::filesystem::path& path) {
  const std::string name = path.string();
  File in(path, "rb");
  if (!in.fp) throw Error("cannot open image " + name + ": " + std::strerror(errno));
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, sizeof(magic), in.fp);
  std::rewind(in.fp);
  if (got >= 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(in.fp, name);
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return read_jpeg(in.fp, name);
  throw Error(name + " is neither a PNG nor a JPEG file (this runner reads those two)");
}

void write_label_png(const std::filesystem::path& path, const std::int32_t* labels, int height, int width,
                     int num_labels) {
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  try {
    write_png_file(tmp, labels, height, width, num_labels);
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace zeroseg
